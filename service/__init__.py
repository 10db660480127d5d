"""The embedkit HTTP service: ``create_app`` (FastAPI) and ``embedkit serve``."""
