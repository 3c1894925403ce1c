# The compiled twin has the pure twin's types.
from lbcore._pure.iptables_chains import ChainColumns as ChainColumns
from lbcore._pure.iptables_chains import ChainParts as ChainParts
from lbcore._pure.iptables_chains import chain_name as chain_name
from lbcore._pure.iptables_chains import chain_texts as chain_texts
from lbcore._pure.iptables_chains import join_payload as join_payload
