"""A sandbox's secrets: checked names and values (spec), kept on the host only in 0600 files
on tmpfs (vault), removed from everything the engine says or writes (redact), and delivered
into the guest as files and, per call, as variables (keeper)."""
