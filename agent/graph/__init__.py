"""The Graph access layer: `client` (HTTP, paging, retries, errors) and one service module
per area, each mapping Graph's JSON into small typed models for the jobs."""
