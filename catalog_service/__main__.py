"""`python -m catalog_service --host H --port P [knobs]`: what orchestrator.stack starts."""

from catalog_service.cli import catalog_server

if __name__ == "__main__":
    catalog_server.main(prog_name="python -m catalog_service")
