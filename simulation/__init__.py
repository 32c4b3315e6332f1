"""Simulation: a world of users and items that writes raw days and clicks through serving."""
