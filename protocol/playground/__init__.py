"""The browser playground: a single page served at GET / (chat, structured output and tools,
ranking, live server figures), made of static files under static/ and calling the public API
like any other client."""
