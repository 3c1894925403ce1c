"""The pure-Python twins: lbcore/_pure/NAME.py mirrors lbcore/_fast/NAME.pyx, name for name.

Each is the readable reference of its compiled twin and the fallback where that is not
built.  lbcore._twins chooses between the two folders; nothing else imports from here.
"""
