"""Developer and test tooling for pgbackup: throwaway PostgreSQL clusters, demo data, DB comparison."""
