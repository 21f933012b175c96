"pytest settings shared by the tests."

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs chapters end to end at toy size (minutes); deselect with -m "not slow"')
    # pytest-xdist registers this marker itself; here so that a run without xdist does not warn about it
    config.addinivalue_line('markers', 'xdist_group(name): tests that share a module fixture run on one xdist worker')

def pytest_collection_modifyitems(config, items):
    "Slow tests first: with the README's `-n 2` they start at once, instead of ending the run on one busy core."
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)

def pytest_cmdline_main(config):
    "With the README's `-n 2 --dist loadgroup` (pytest-xdist): groups go out in collection order, so slow tests first."
    if getattr(config.option, 'dist', None) == 'loadgroup':
        config.option.loadscopereorder = False  # xdist would otherwise hand out the largest groups first, not the slow tests
