# Astro Runtime on Airflow 3.3 (packages.txt and requirements.txt are installed by the
# runtime's ONBUILD steps).
FROM astrocrpublic.azurecr.io/runtime:3.3-2

# pg_dump must be at least the server's major version, and new Supabase projects run
# PostgreSQL 17, which bookworm's postgresql-client (15) cannot dump. Install the clients
# from the PostgreSQL project's own apt repository side by side (/usr/lib/postgresql/<major>/bin);
# pgbackup picks, per target, the oldest installed client at least as new as its server.
# https://www.postgresql.org/download/linux/debian/
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsS -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 postgresql-client-17 postgresql-client-18 \
 && rm -rf /var/lib/apt/lists/*
USER astro
