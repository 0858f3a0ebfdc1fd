"""The architecture specification: the JSON a client sends, validated without torch."""
