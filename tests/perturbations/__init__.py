"""Tests of diffopt.perturbations (a package so that its module names cannot collide with other folders')."""
