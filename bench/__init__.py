import os

# The SDK keeps a gRPC event loop on a thread, so each pty.fork() of the tui bench would log a
# gRPC info line ("skipping fork() handlers"); errors still show. Set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
