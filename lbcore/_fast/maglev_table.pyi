# The compiled twin has the pure twin's types.
from lbcore._pure.maglev_table import (
    maglev_counts as maglev_counts,
    maglev_permutation as maglev_permutation,
    maglev_populate as maglev_populate,
    maglev_table as maglev_table,
)
