"""The engine API's version: bumped when a change would break a client built for the old one.

The engine reports it in Status; the client compares it once when it connects, so a mismatch
is one clear error instead of odd failures later.
"""

API_VERSION = 1
