"""One APIRouter per resource: search, images (and their items), tasks, collections, service."""
