"""The dashboard's widgets. Styles live in the .tcss file beside each module."""
