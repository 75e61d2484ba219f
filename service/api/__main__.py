"""python -m service.api: the service under uvicorn, every start flag from the EMBED_* settings
(service.api.server)."""

from __future__ import annotations

from service.api.server import main

if __name__ == "__main__":
    main()
