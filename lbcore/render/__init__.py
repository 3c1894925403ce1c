"""Renderers: the same Service models as kernel configuration text.

Pure functions: models in, text out, in a deterministic order, with no side effects and
no shelling out.  Applying the text is the caller's job (``iptables-restore --noflush``,
``ipset restore``, ``ipvsadm -R``).
"""
