"""The Backups page: a FastAPI app under Airflow's API server, shown in the UI's navigation."""
