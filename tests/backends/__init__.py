"""Tests of diffopt.backends (a package so that its module names cannot collide with other folders')."""
