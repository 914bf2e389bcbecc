"""Tests of diffopt.imle (a package so that its module names cannot collide with other folders')."""
