"pytest settings shared by the tests."

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs chapters end to end at toy size (minutes); deselect with -m "not slow"')
    # pytest-xdist registers this marker itself; here so that a run without xdist does not warn about it
    config.addinivalue_line('markers', 'xdist_group(name): tests that share a module fixture run on one xdist worker')

def pytest_collection_modifyitems(config, items):
    "Slow tests first, then grouped ones: with the README's `-n 2` they start early instead of ending the run on one core."
    # a group (the Slurm cluster's tests, which partly wait on the scheduler) is one unit of work: handed out last, it ran
    # alone for two minutes at the end of a CI dry run while the other core idled
    def order(item):
        slow, grouped = (item.get_closest_marker(m) is not None for m in ('slow', 'xdist_group'))
        return (0, grouped) if slow else (1, not grouped)  # the README's blocks, slow groups, other groups, the rest
    items.sort(key=order)

def pytest_cmdline_main(config):
    "With the README's `-n 2 --dist loadgroup` (pytest-xdist): groups go out in collection order, so slow tests first."
    if getattr(config.option, 'dist', None) == 'loadgroup':
        config.option.loadscopereorder = False  # xdist would otherwise hand out the largest groups first, not the slow tests
