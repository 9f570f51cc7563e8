"""Benchmark suites: the schema, resumable grids of cells, result rows, tables, plots and the HTML report.
"""
