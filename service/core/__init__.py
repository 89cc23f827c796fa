"""The request core shared by every transport: parse a request, route it, run it, answer it."""
