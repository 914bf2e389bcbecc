"""Tests of diffopt.dfl (a package so that its module names cannot collide with other folders')."""
