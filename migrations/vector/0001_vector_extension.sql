-- pgvector, for the features that store embeddings (the semantic cache, conversation memory).
-- These migrations are kept apart from the shared state's, with their own bookkeeping table
-- (_aigw_vector_migrations): where the extension is not allowed (Azure Database for PostgreSQL
-- allows it only when the server parameter azure.extensions lists VECTOR), only those features
-- are off, and the gateway's shared state works as before.
CREATE EXTENSION IF NOT EXISTS vector;
