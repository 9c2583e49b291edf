import click

@click.group()
def main():
    """l2l"""
