from rllib_rpp.cli import main

main()
