"""Alert receivers: one file per receiver type, discovered by ``type`` (see base.py)."""
