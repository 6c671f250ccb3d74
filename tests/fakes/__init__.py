"""Local HTTP fakes of the vendor APIs, one package per vendor (state apart from wire format).

Each fake runs as a real HTTP server on 127.0.0.1 (see `http_base.FakeServer`), follows the
vendor's documented requests and responses, checks what it receives and answers a malformed
request with an error naming the problem, and can be told to inject faults.
"""
