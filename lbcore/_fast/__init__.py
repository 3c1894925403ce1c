"""The compiled twins: lbcore/_fast/NAME.pyx mirrors lbcore/_pure/NAME.py, name for name.

lbcore._twins chooses between the two folders; nothing else imports from here.
"""
