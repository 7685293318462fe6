"""The KServe v2 HTTP/REST frontend as Triton serves it, binary tensor extension included."""
