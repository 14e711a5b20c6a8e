"""Files in and out of sandboxes: live transfers through the guest agent, patches, and offline
disk access."""
