"""The HTTP face of the service: FastAPI routes that validate, enqueue and answer; no tensor math."""
