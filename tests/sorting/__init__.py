"""Tests of diffopt.sorting (a package so that its module names cannot collide with other folders')."""
