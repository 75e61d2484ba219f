"""A recommendation model on a click log with hashed 64-bit ids: user and item tables in the
service, dynamic (rows made for the ids that show up), trained by several processes with BPR
(python -m examples.recsys)."""
