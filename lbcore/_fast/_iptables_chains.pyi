# The compiled twin has the pure twin's types.
from lbcore.render._iptables_chains_py import join_payload as join_payload
