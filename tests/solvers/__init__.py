"""Tests of diffopt.solvers (a package so that its module names cannot collide with other folders')."""
