"""Indexing: the staged pipeline (read → plan → decode → detect → crop → tag → ocr → describe → embed → write),
its runners (sequential, micro-batched for the queue, Ray), the crop policy, descriptions, and the derived FAISS
indexes kept fresh from the database's notifications."""
