"""Screens: the dashboard, dialogs and the key map."""
