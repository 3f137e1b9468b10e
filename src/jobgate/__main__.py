from jobgate.cli import app

app()
