"""What the API and the workers share, free of torch and FastAPI: settings, logs, Redis keys, codec, job state."""
