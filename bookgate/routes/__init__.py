"""The composition root's own routers: site configuration import over every domain."""
