"""The events a socket of the forwarder waits for, as its poller and its streams name them.

Two bits so that both fit one small int (`Poller.watch`'s ``events``); 0 is "not watched".
"""

__all__ = ["READ", "WRITE"]

READ = 1
WRITE = 2
