"""Names for the anonymizer bench written from knowledge of real-world name distributions, not from Faker (the
gazetteer's source): given names and family names from many communities living in the UK, and places in and
outside it. bench/pii_corpus.py subtracts the gazetteer from these before use; no detector list reads this file.
"""

GIVEN = """
    aaliyah abimbola adaeze adwoa afua agnieszka aigerim akosua alejandro aleksander amara amaru anaya anouk
    aoife aroha asel ayaan ayodele bartosz bolanle caoimhe chidinma chiamaka chinedu ciaran dagny dariusz
    dembe ebele efua eilidh emeka eshaan farida folasade gráinne habiba hamza ifeoma ikechukwu imogen isla
    jadwiga jorge kagiso kalani kamala kavya kemi kwabena kwame lachlan leilani lerato lindiwe lorcan mairead
    malak manon marisol mehmet mirela mthunzi naledi nasrin niamh nkechi nnamdi obinna oisin olamide olumide
    oluwaseun oona pania parisa precious radhika rangi rashida rhiannon ruairi saoirse sakura seren siobhan
    siddharth sinead tamar tanvir temitope thandiwe tiwa tomasz uchenna udo uzma wiremu xolani yaw yetunde
    zainab zanele zofia zoran anwen bronwen caradog dilwyn eirlys gethin iolo llinos meinir rhodri sioned
    tegwen aarav ishaan vihaan reyansh ananya diya saanvi pranav rohan tanisha nilufar shirin dariush kourosh
    farzaneh bahar golnaz arash behrouz mitra yusra idris bilal samira khadija tariq imran nabila rukhsana
""".split()

FAMILY = """
    adebayo adeyemi afolabi agarwal akinola akhtar anand asante babatunde banerjee bhattacharya boateng
    chaudhry chukwu dlamini eze fofanah gyamfi hussain ibekwe iwu jovanovic kaczmarek kowalczyk krishnan
    kuznetsova lewandowska mahlangu mensah mwangi ndlovu nkosi nwachukwu obi odhiambo ogunleye okafor okeke
    oladipo olawale onyango osei owusu pillai qureshi rahman rajan sithole soyinka tembo usman venkatesan
    wojcik yeboah zulu nakamura takahashi watanabe kobayashi yamamoto nguyen tran pham hoang vuong
    mcallister mcgillivray ogilvie macaulay fitzgerald odonnell mcgrath quigley breathnach mhaoláin
    pryce llewellyn vaughan bowen gruffydd cadwaladr
""".split()

PLACES = """
    ilkeston wolverhampton stockton scunthorpe kirkby ormskirk skelmersdale prestwich tamworth nuneaton
    bridlington whitby mablethorpe skegness cleethorpes goole selby thirsk ripon knaresborough otley ilkley
    keighley todmorden hebden rawtenstall accrington darwen chorley leyland kirkham garstang morecambe
    ulverston whitehaven workington maryport cockermouth penrith hexham morpeth alnwick berwick ashington
    blyth jarrow hebburn consett stanley peterlee seaham spennymoor bishop auckland ennis tralee sligo
    letterkenny athlone mullingar kumasi tamale enugu ibadan kaduna mombasa kisumu bulawayo lusaka gaborone
    multan faisalabad rawalpindi peshawar chittagong rajshahi jaffna kandy amritsar ludhiana jalandhar
""".split()
