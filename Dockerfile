# Astro Runtime on Airflow 3.3 (packages.txt and requirements.txt are installed by the
# runtime's ONBUILD steps). pg_dump must be at least the server's major version: for
# PostgreSQL 17 servers, add postgresql-client-17 from the PGDG apt repository.
FROM astrocrpublic.azurecr.io/runtime:3.3-2
