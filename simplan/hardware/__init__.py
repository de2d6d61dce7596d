"""Hardware side: profiles (data, checked at load) and the cluster built from them."""
