"""The agent's one HTTP stack: an asyncio server on the h11 HTTP/1.1 parser that serves WSGI
applications (metrics and probes, the console, the falco-http intake)."""
