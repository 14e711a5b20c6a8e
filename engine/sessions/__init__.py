"""Long-lived guest sessions the engine supervises (shells, services): their table in the
store and the watch that re-binds them whenever a sandbox's agent connection changes."""
