from rllib_rpp.app.cli import main

main()
