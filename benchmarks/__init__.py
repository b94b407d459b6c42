"""``make bench``: the framework's overhead against raw aiohttp and its peers, side by side."""
