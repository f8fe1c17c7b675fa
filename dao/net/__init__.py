"""Streams across machines: the wire format of frames (:mod:`dao.net.wire`) and the Redis
registry of machines and their streams (:mod:`dao.net.registry`).

Work in progress (issue 13): the per-machine server and the mirrors come next.
"""
