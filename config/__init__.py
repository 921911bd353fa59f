"""Settings and the site configuration schema: the bottom layer, importing no other package."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
