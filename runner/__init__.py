"""runner: an async bulk job runner for the Selam API and OpenAI-compatible chat APIs."""
