"""Jobs made of jobs: a comparison or a sweep is a parent row, child jobs and a Celery canvas that runs them;
the report stage reads their experiment rows and settles the parent."""
