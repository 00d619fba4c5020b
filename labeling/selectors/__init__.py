"""Reads that cross relations, shared by pages and the API: the workspace (blind), the
dashboard and figures, and the reviewers' queues."""
